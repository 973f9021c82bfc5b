#!/usr/bin/env python3
"""Feature store benchmark: Ghaf against Feast on the same synthetic data and machine.

Feast's side runs an external harness script (its path from `--harness` or the environment
variable GHAF_FEAST_HARNESS) phase by phase, each in its own process, with the DuckDB offline
store and the SQLite online store. Its `gen` phase writes the feature table
`<workdir>/data/driver_stats.parquet`; Ghaf reads that same file.

Ghaf's side runs the release `ghaf server` on 127.0.0.1 with a data directory of its own and
drives it over HTTP:

  hist    POST /training-sets for the same entity table the harness builds (same seed),
          three times. With the table cache directory emptied first, the first call reads
          the dataset version and computes the view's feature table, which it also writes
          to the table cache; the second call finds the table in memory. After a restart,
          the third call reads the table from the table cache. The training set is stored
          as a dataset version, which Feast's `to_df()` does not do; the time includes that
          write.
  mat     POST /feature-views/driver_stats/materialize over the whole data window.
  http    POST /get-online-features with 1 and 100 random entities, sequential requests on
          one kept-alive connection, the same request counts as the harness. With
          `--floor`, the same reads are then timed against the `http_floor` example of
          ghaf-server, which returns Ghaf's response of that size and does no other
          work. What remains of a latency there is what no handler can remove: the
          client's work, hyper's and tokio's, the loopback round trip and the wake-ups.

The server is restarted before each phase, so its peak RSS (VmHWM) is per phase, as the
harness reports per-process peaks for Feast. Run with the venv of bench/feast/setup.sh:

  ~/.cache/ghaf-feast-venv/bin/python bench/feast/run.py \
      --harness PATH/feast_bench.py --ghaf "$CARGO_TARGET_DIR/release/ghaf" \
      --workdir /tmp/feast-vs-ghaf --out /tmp/feast-vs-ghaf/results.jsonl \
      --floor "$CARGO_TARGET_DIR/release/examples/http_floor"

`--floor` is optional; `cargo build --release -p ghaf-server --example http_floor` builds it.

Configurations: A is 100,000 keys x 10 rows; C is 10 keys x 100,000 rows; both with
100,000 entity rows. `--configs A`, `--sides ghaf` and `--skip-gen` select parts.
Every process this script starts is stopped by its process group id; only loopback
addresses are used.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# The harness's data window: rows span the 30 days before BASE_TS, the view's TTL is 7 days.
BASE_TS = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPAN_DAYS = 30
TTL = "7d"
FEATURES = [f"f{i}" for i in range(8)] + ["cnt"]
PROJECT = "default"

CONFIGS = {
    "A": {"entities": 100_000, "rows_per_entity": 10, "entity_df_rows": 100_000},
    "C": {"entities": 10, "rows_per_entity": 100_000, "entity_df_rows": 100_000},
}


def log(message):
    print(message, flush=True)


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values, p):
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100.0 * (len(ordered) - 1)))))
    return ordered[k]


def summary(seconds):
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def record(out, entry):
    entry = dict(entry, loadavg=loadavg(), at=datetime.now(timezone.utc).isoformat())
    log(json.dumps(entry))
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")


def status_kb(pid, field):
    """A `VmHWM`/`VmRSS` line of /proc/PID/status in kB, 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------------------
# Feast: the external harness, one process per phase
# ----------------------------------------------------------------------------------------
class ServeSampler(threading.Thread):
    """Samples the summed RSS of the `feast serve` processes (gunicorn master and workers)
    whose working directory is the harness's workdir, while the `http` phase runs."""

    def __init__(self, workdir):
        super().__init__(daemon=True)
        self.workdir = os.path.realpath(workdir)
        self.peak_kb = 0
        self.stopped = threading.Event()

    def pids(self):
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ")
                if b"feast" not in cmdline or b"serve" not in cmdline:
                    continue
                if os.path.realpath(f"/proc/{entry}/cwd") == self.workdir:
                    found.append(int(entry))
            except OSError:
                continue
        return found

    def run(self):
        while not self.stopped.wait(0.5):
            total = sum(status_kb(pid, "VmRSS") for pid in self.pids())
            self.peak_kb = max(self.peak_kb, total)


def run_feast(args, name, config, workdir, phases):
    harness = args.harness or os.environ.get("GHAF_FEAST_HARNESS")
    if not harness or not os.path.exists(harness):
        sys.exit("give the Feast harness with --harness or GHAF_FEAST_HARNESS")
    python = args.feast_python or sys.executable
    results = os.path.join(workdir, "feast-results.jsonl")
    for phase in phases:
        command = [
            python, harness, "--workdir", workdir, "--offline", "duckdb",
            "--entities", str(config["entities"]),
            "--rows-per-entity", str(config["rows_per_entity"]),
            "--entity-df-rows", str(config["entity_df_rows"]),
            "--iters", str(args.iters), "--out", results, phase,
        ]
        before = loadavg()
        started = time.perf_counter()
        sampler = ServeSampler(workdir) if phase == "http" else None
        if sampler:
            sampler.start()
        process = subprocess.Popen(command, start_new_session=True)
        timed_out = False
        try:
            rc = process.wait(timeout=args.feast_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            rc = process.wait()
        wall = time.perf_counter() - started
        if sampler:
            sampler.stopped.set()
            sampler.join()
        result = None
        if os.path.exists(results) and not timed_out and rc == 0:
            with open(results) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            matching = [line for line in lines if line["phase"] == phase]
            result = matching[-1]["result"] if matching else None
            if result is not None and phase == "hist":
                # Count the rows Feast returned against the rows it was given.
                result["dropped_rows"] = config["entity_df_rows"] - result["out_rows"]
        entry = {
            "side": "feast", "config": name, "phase": phase, "rc": rc,
            "timed_out": timed_out, "wall_seconds": round(wall, 2),
            "loadavg_before": before, "result": result,
        }
        if sampler:
            entry["serve_peak_rss_mb"] = round(sampler.peak_kb / 1024)
        record(args.out, entry)


# ----------------------------------------------------------------------------------------
# Ghaf: the release server over HTTP
# ----------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process, timeout):
    """Send SIGTERM to the process group of `process`, which this script started in a
    session of its own, and SIGKILL if it has not exited after `timeout` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Ghaf:
    """`ghaf server` on a data directory; the admin token of the first start is kept in
    `<data_dir>/bench-token` so the server can be started again on the same directory."""

    def __init__(self, binary, data_dir, log_filter="warn"):
        self.binary = binary
        self.data_dir = data_dir
        self.log_filter = log_filter
        self.process = None
        self.port = None
        self.token = None
        self.conn = None

    def __enter__(self):
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GHAF_")}
        env["RUST_LOG"] = self.log_filter
        self.process = subprocess.Popen(
            [self.binary, "server", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", self.data_dir],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.data_dir, "server.log"), "a"),
            text=True, env=env, start_new_session=True,
        )
        token_file = os.path.join(self.data_dir, "bench-token")
        if os.path.exists(token_file):
            with open(token_file) as f:
                self.token = f.read().strip()
        else:
            for line in self.process.stdout:
                if line.strip().startswith("ghaf_"):
                    self.token = line.strip()
                    break
            if not self.token:
                raise RuntimeError("ghaf server printed no admin token; see server.log")
            with open(token_file, "w") as f:
                f.write(self.token)
        deadline = time.monotonic() + 120
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ghaf server did not come up; see server.log")
            time.sleep(0.2)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1800)
        return self

    def __exit__(self, *exc):
        if self.conn:
            self.conn.close()
        stop_group(self.process, timeout=60)
        return False

    def peak_rss_mb(self):
        return round(status_kb(self.process.pid, "VmHWM") / 1024)

    def call(self, method, path, body=None, content_type="application/json", raw=False):
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None and not hasattr(body, "read") and not isinstance(body, bytes):
            body = json.dumps(body)
        if body is not None:
            headers["Content-Type"] = content_type
        if hasattr(body, "read"):
            headers["Content-Length"] = str(os.fstat(body.fileno()).st_size)
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:500]!r}")
        return data if raw else (json.loads(data) if data else None)


def api(path):
    return f"/api/v1/projects/{PROJECT}{path}"


def write_for_ghaf(table, path):
    """Writes an Arrow table uncompressed with timestamps in microseconds at "+00:00"."""
    fields = [
        pa.field(f.name, pa.timestamp("us", tz="+00:00")) if pa.types.is_timestamp(f.type) else f
        for f in table.schema
    ]
    pq.write_table(table.cast(pa.schema(fields)), path, compression="none")


def entity_table(config, path):
    """The harness's entity dataframe: the same seed and draws, in the same order."""
    rng = np.random.default_rng(7)
    m = config["entity_df_rows"]
    span_s = SPAN_DAYS * 86400
    frame = pd.DataFrame(
        {
            "driver_id": rng.integers(1, config["entities"] + 1, size=m, dtype=np.int64),
            "event_timestamp": pd.to_datetime(
                BASE_TS.timestamp() - span_s + rng.integers(0, span_s, size=m), unit="s", utc=True
            ),
            "label": rng.random(m),
        }
    )
    write_for_ghaf(pa.Table.from_pandas(frame, preserve_index=False), path)
    return m


def feature_schema():
    columns = [
        {"name": "driver_id", "type": "integer", "nullable": False},
        {"name": "event_timestamp", "type": "timestamp", "nullable": False},
        {"name": "created", "type": "timestamp", "nullable": False},
    ]
    columns += [{"name": f"f{i}", "type": "float"} for i in range(8)]
    columns.append({"name": "cnt", "type": "integer"})
    return {"columns": columns, "event_time": "event_timestamp"}


def definitions():
    features = [{"name": f} for f in FEATURES]
    view = {
        "name": "driver_stats", "entities": ["driver"], "source": {"dataset": "driver_stats"},
        "event_time": "event_timestamp", "created_time": "created", "ttl": TTL,
        "features": features,
    }
    # Ghaf applies the TTL on online reads and the data window ended on 2026-01-01, so the
    # read benchmark uses a copy of the view without a TTL: its values come back PRESENT
    # with their full JSON, as Feast's do.
    online = dict(view, name="driver_stats_online")
    del online["ttl"]
    return {
        "entities": [{"name": "driver", "join_key": "driver_id", "value_type": "integer"}],
        "feature_views": [view, online],
    }


def setup_ghaf(ghaf, workdir, config):
    ghaf.call("POST", api("/datasets"),
              {"name": "driver_stats", "description": "bench", "schema": feature_schema()})
    ghaf.call("POST", api("/datasets"), {
        "name": "entity_rows", "description": "bench",
        "schema": {"columns": [
            {"name": "driver_id", "type": "integer", "nullable": False},
            {"name": "event_timestamp", "type": "timestamp", "nullable": False},
            {"name": "label", "type": "float"},
        ]},
    })
    # Ghaf's Parquet reader is built without Snappy, pandas' default codec, and reads only
    # offset time zones, so the harness's file is rewritten uncompressed with "+00:00"
    # instead of "UTC" first (same rows and instants; not timed).
    features_path = os.path.join(workdir, "ghaf-driver_stats.parquet")
    write_for_ghaf(pq.read_table(os.path.join(workdir, "data", "driver_stats.parquet")),
                   features_path)
    started = time.perf_counter()
    with open(features_path, "rb") as f:
        ghaf.call("POST", api("/datasets/driver_stats/versions?format=parquet"), f,
                  "application/vnd.apache.parquet")
    ingest_seconds = time.perf_counter() - started
    entities_path = os.path.join(workdir, "ghaf-entities.parquet")
    entity_table(config, entities_path)
    with open(entities_path, "rb") as f:
        ghaf.call("POST", api("/datasets/entity_rows/versions?format=parquet"), f,
                  "application/vnd.apache.parquet")
    plan = ghaf.call("POST", api("/features/apply"), {"definitions": definitions()})
    return {"ingest_seconds": round(ingest_seconds, 2), "plan": plan["text"]}


def training_set(ghaf, output, m):
    body = {
        "entity_dataset": "entity_rows",
        "features": [f"driver_stats:{f}" for f in FEATURES],
        "full_feature_names": True,
        "output_dataset": output,
    }
    started = time.perf_counter()
    outcome = ghaf.call("POST", api("/training-sets"), body)
    seconds = time.perf_counter() - started
    version = outcome["version"]
    data = ghaf.call("GET", api(f"/datasets/{output}/versions/{version}/data"), raw=True)
    path = os.path.join(ghaf.data_dir, f"{output}.parquet")
    with open(path, "wb") as f:
        f.write(data)
    frame = pd.read_parquet(path)
    return {
        "entity_df_rows": m,
        "out_rows": len(frame),
        "dropped_rows": m - len(frame),
        "seconds": round(seconds, 3),
        "null_frac": round(float(frame["driver_stats__f0"].isna().mean()), 4),
        "columns": list(frame.columns),
    }


def read_loop(call, config, batch, count, rng):
    """Send 20 warm-up reads of `batch` random entities, then `count` timed ones, and return
    the last response and the latency summary."""
    refs = [f"driver_stats_online:{f}" for f in FEATURES]

    def body():
        keys = [int(x) for x in rng.integers(1, config["entities"] + 1, size=batch)]
        return {"features": refs, "entities": {"driver_id": keys}}

    for _ in range(20):
        call(body())
    latencies = []
    for _ in range(count):
        request = body()
        started = time.perf_counter()
        response = call(request)
        latencies.append(time.perf_counter() - started)
    return response, summary(latencies)


def read_counts(iters):
    """Return the timed request counts of the harness's http phase: (batch size, count)."""
    return ((1, iters), (100, max(50, iters // 3)))


def online_reads(ghaf, config, iters):
    """Time online reads against Ghaf. Also return one raw response per batch size, the
    bodies the floor responder returns."""
    rng = np.random.default_rng(13)
    refs = [f"driver_stats_online:{f}" for f in FEATURES]
    path = "/get-online-features"
    sample = ghaf.call("POST", path, {"features": refs, "entities": {"driver_id": [1, 2, 999999999]}})
    results = {"sample_statuses": [col["statuses"] for col in sample["results"][1:3]]}
    bodies = {}
    for batch, count in read_counts(iters):
        response, results[f"batch_{batch}"] = read_loop(
            lambda request: ghaf.call("POST", path, request), config, batch, count, rng)
        assert len(response["results"][1]["values"]) == batch
        assert all(s == "PRESENT" for s in response["results"][1]["statuses"])
        # Ghaf writes compact JSON, so the floor's body has about the same size (Python
        # writes some floats differently, such as 1e-05 for 1e-5).
        bodies[batch] = json.dumps(response, separators=(",", ":")).encode()
    return results, bodies


class Floor:
    """The `http_floor` example of ghaf-server: a hyper server on the same connection setup
    as `ghaf server` that returns one fixed body for every request and does nothing else."""

    def __init__(self, binary, body_path):
        self.binary = binary
        self.body_path = body_path
        self.process = None
        self.conn = None

    def __enter__(self):
        port = free_port()
        self.process = subprocess.Popen(
            [self.binary, "--listen", f"127.0.0.1:{port}", "--body", self.body_path],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            # The process prints its address once the socket is bound, or exits.
            line = self.process.stdout.readline()
            if not line.startswith("listening on"):
                raise RuntimeError(f"http_floor did not start: {line!r}")
        except BaseException:
            self.stop()
            raise
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        return self

    def __exit__(self, *exc):
        if self.conn:
            self.conn.close()
        self.stop()
        return False

    def stop(self):
        """Stop the responder's process group, the one this object started."""
        self.process.stdout.close()
        stop_group(self.process, timeout=30)

    def call(self, request):
        # The same work per request as Ghaf.call: headers, JSON in and out.
        self.conn.request("POST", "/get-online-features", body=json.dumps(request),
                          headers={"Authorization": "Bearer floor", "Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"http_floor: HTTP {response.status}")
        return json.loads(data)


def floor_reads(binary, workdir, config, iters, bodies):
    """Time the same reads against the floor responder, started once per batch size with
    Ghaf's response for that size."""
    rng = np.random.default_rng(13)
    results = {}
    for batch, count in read_counts(iters):
        body_path = os.path.join(workdir, f"floor-body-{batch}.json")
        with open(body_path, "wb") as f:
            f.write(bodies[batch])
        with Floor(binary, body_path) as floor:
            _, results[f"batch_{batch}"] = read_loop(floor.call, config, batch, count, rng)
    return results


def run_ghaf(args, name, config, workdir, phases):
    data_dir = os.path.join(workdir, "ghaf-data")
    if not os.path.exists(os.path.join(data_dir, "bench-token")):
        with Ghaf(args.ghaf, data_dir) as ghaf:
            setup = setup_ghaf(ghaf, workdir, config)
        record(args.out, {"side": "ghaf", "config": name, "phase": "setup", "result": setup})
    m = config["entity_df_rows"]
    # Each run stores its training sets under new dataset names.
    runs = time.strftime("%H%M%S")
    if "hist" in phases:
        prefix = f"ts-{name.lower()}-{os.getpid()}-{runs}"
        shutil.rmtree(os.path.join(data_dir, "features", "tables"), ignore_errors=True)
        with Ghaf(args.ghaf, data_dir, args.server_log) as ghaf:
            before = loadavg()
            computed = training_set(ghaf, f"{prefix}-computed", m)
            warm = training_set(ghaf, f"{prefix}-warm", m)
            computed_rss = ghaf.peak_rss_mb()
        with Ghaf(args.ghaf, data_dir, args.server_log) as ghaf:
            first = training_set(ghaf, f"{prefix}-first", m)
            record(args.out, {"side": "ghaf", "config": name, "phase": "hist",
                              "loadavg_before": before, "peak_rss_mb": computed_rss,
                              "peak_rss_mb_after_restart": ghaf.peak_rss_mb(),
                              "result": {"computed": computed, "cached_table": warm,
                                         "first_after_restart": first}})
    if "mat" in phases:
        start = (BASE_TS - timedelta(days=SPAN_DAYS + 1)).isoformat()
        end = (BASE_TS + timedelta(hours=2)).isoformat()
        with Ghaf(args.ghaf, data_dir) as ghaf:
            before = loadavg()
            started = time.perf_counter()
            outcome = ghaf.call("POST", api("/feature-views/driver_stats/materialize"),
                                {"start": start, "end": end})
            seconds = time.perf_counter() - started
            record(args.out, {"side": "ghaf", "config": name, "phase": "mat",
                              "loadavg_before": before, "peak_rss_mb": ghaf.peak_rss_mb(),
                              "result": {"seconds": round(seconds, 3),
                                         "materialization": outcome["materialization"]}})
    if "http" in phases:
        with Ghaf(args.ghaf, data_dir) as ghaf:
            ghaf.call("POST", api("/feature-views/driver_stats_online/materialize"),
                      {"end": (BASE_TS + timedelta(hours=2)).isoformat()})
        with Ghaf(args.ghaf, data_dir) as ghaf:
            before = loadavg()
            result, bodies = online_reads(ghaf, config, args.iters)
            record(args.out, {"side": "ghaf", "config": name, "phase": "http",
                              "loadavg_before": before, "peak_rss_mb": ghaf.peak_rss_mb(),
                              "result": result})
        if args.floor:
            before = loadavg()
            result = floor_reads(args.floor, workdir, config, args.iters, bodies)
            record(args.out, {"side": "floor", "config": name, "phase": "http",
                              "loadavg_before": before, "result": result})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--harness", help="path of the Feast harness (or GHAF_FEAST_HARNESS)")
    parser.add_argument("--feast-python", help="Python with Feast (default: this one)")
    parser.add_argument("--ghaf", required=True, help="path of the release `ghaf` binary")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", help="append one JSON line per measurement here")
    parser.add_argument("--configs", default="A,C")
    parser.add_argument("--sides", default="feast,ghaf")
    parser.add_argument("--phases", default="hist,mat,http",
                        help="phases of config A; config C runs hist only")
    parser.add_argument("--skip-gen", action="store_true",
                        help="reuse the data of an earlier run in the workdir")
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--floor", help="path of the release `http_floor` example of ghaf-server; "
                        "with it the http phase also times the same reads against a responder "
                        "that does no work, the latency floor of this client on this machine")
    parser.add_argument("--server-log", default="warn",
                        help="RUST_LOG filter of the Ghaf server; its log is <workdir>/config-*/ghaf-data/server.log")
    parser.add_argument("--feast-timeout", type=int, default=600,
                        help="seconds before a Feast phase is killed")
    args = parser.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    if args.out:
        args.out = os.path.abspath(args.out)
    sides = args.sides.split(",")
    for name in args.configs.split(","):
        config = CONFIGS[name]
        workdir = os.path.join(args.workdir, f"config-{name}")
        os.makedirs(workdir, exist_ok=True)
        phases = args.phases.split(",") if name == "A" else ["hist"]
        if not args.skip_gen:
            run_feast(args, name, config, workdir, ["gen"])
        if "feast" in sides:
            run_feast(args, name, config, workdir, phases)
        if "ghaf" in sides:
            run_ghaf(args, name, config, workdir, phases)


if __name__ == "__main__":
    main()
