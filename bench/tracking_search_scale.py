"""Times run search on Ghaf and on `mlflow server` over the same 1,000 and 100,000 runs.

Usage (the venv from tests/mlflow/setup.sh has the pinned client):

    ~/.cache/ghaf-venv/bin/python bench/tracking_search_scale.py GHAF_BINARY [--runs 1000,100000]

Creating 100,000 runs through `mlflow server`'s API takes hours, so both stores are seeded
directly and equally:
  1. each server starts once on a fresh store, the script creates one experiment per run
     count through the MLflow client, and the server stops;
  2. the runs are inserted with Python's sqlite3 into each server's own tables: `runs`,
     `params`, `tags`, `metrics` and `latest_metrics` for MLflow, the `tracking_*` tables
     for Ghaf. Run i gets the metrics acc and loss (step 0), the params model (one of four)
     and depth, and the tag team (one of twenty);
  3. both servers start again and every search runs through the same MlflowClient, and as a
     raw HTTP POST of the same request on a kept-alive connection, which measures the
     server's time plus the transfer without the client's parsing. The raw request is sent
     with the case's page size and with max_results 10.

Each measurement is the median of --reps repetitions (default 5; --large-reps, default 3,
for 10,000 runs or more), after one warm-up call.
The script checks that both servers return the same run ids in the same order.
"""

import argparse
import http.client
import json
import os
import sqlite3
import statistics
import tempfile
import time
import urllib.parse

from tracking_servers import GhafServer, MlflowServer, client_for, load_average

MODELS = ["rf", "gbm", "logreg", "mlp"]
BASE_TIME = 1_700_000_000_000

CASES = [
    ("no filter, newest first", "", [], 1000),
    ("metrics.acc > 0.5 and params.model = 'rf'", "metrics.acc > 0.5 and params.model = 'rf'", [], 1000),
    ("order_by metrics.acc DESC, top 100", "", ["metrics.acc DESC"], 100),
    ("tags.team = 'team-7' and metrics.loss < 0.01", "tags.team = 'team-7' and metrics.loss < 0.01", [], 1000),
]


def run_rows(experiment_id, count):
    """Yields (run_id, index, acc, loss, model, depth, team) for the runs of one experiment."""
    for i in range(count):
        run_id = f"{int(experiment_id):08x}{i:024x}"
        acc = (i * 7919 % 10_000) / 10_000
        loss = (i * 104_729 % 10_000) / 10_000
        yield run_id, i, acc, loss, MODELS[i % 4], str(i % 12), f"team-{i % 20}"


def seed_mlflow(db_path, experiment_id, count):
    db = sqlite3.connect(db_path)
    runs, params, tags, metrics, latest = [], [], [], [], []
    for run_id, i, acc, loss, model, depth, team in run_rows(experiment_id, count):
        start = BASE_TIME + i
        runs.append((
            run_id, f"run-{i}", "LOCAL", "bench", "", "bench", "FINISHED", start, start + 1000,
            "", "active", f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
            int(experiment_id),
        ))
        params += [("model", model, run_id), ("depth", depth, run_id)]
        tags.append(("team", team, run_id))
        metrics += [("acc", acc, start, run_id, 0, 0), ("loss", loss, start, run_id, 0, 0)]
        latest += [("acc", acc, start, 0, 0, run_id), ("loss", loss, start, 0, 0, run_id)]
    with db:
        db.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
            "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
            "artifact_uri, experiment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            runs,
        )
        db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", params)
        db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tags)
        db.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            metrics,
        )
        db.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            latest,
        )
    db.close()


def seed_ghaf(db_path, experiment_id, count):
    db = sqlite3.connect(db_path)
    tenant = "default"
    (project,) = db.execute(
        "SELECT id FROM projects WHERE tenant_id = ? AND name = 'default'", (tenant,)
    ).fetchone()
    scope = (tenant, project)
    runs, params, tags, metrics, latest = [], [], [], [], []
    for run_id, i, acc, loss, model, depth, team in run_rows(experiment_id, count):
        start = BASE_TIME + i
        runs.append(scope + (
            run_id, int(experiment_id), f"run-{i}", "bench", "FINISHED", start, start + 1000,
            "active", f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
        ))
        # Param and tag rows repeat the run's experiment id and start time.
        place = (int(experiment_id), start)
        params += [
            scope + (run_id, "model", model) + place,
            scope + (run_id, "depth", depth) + place,
        ]
        tags.append(scope + (run_id, "team", team) + place)
        metrics += [
            scope + (run_id, "acc", 0, start, acc, 0, ""),
            scope + (run_id, "loss", 0, start, loss, 0, ""),
        ]
        latest += [
            scope + (run_id, "acc", 0, start, acc, 0),
            scope + (run_id, "loss", 0, start, loss, 0),
        ]
    with db:
        db.executemany(
            "INSERT INTO tracking_runs (tenant_id, project_id, run_id, experiment_id, run_name, "
            "user_id, status, start_time, end_time, lifecycle_stage, artifact_uri) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            runs,
        )
        db.executemany(
            "INSERT INTO tracking_params (tenant_id, project_id, run_id, key, value, "
            "experiment_id, start_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
            params,
        )
        db.executemany(
            "INSERT INTO tracking_run_tags (tenant_id, project_id, run_id, key, value, "
            "experiment_id, start_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
            tags,
        )
        db.executemany(
            "INSERT INTO tracking_metrics (tenant_id, project_id, run_id, key, step, timestamp, "
            "value, is_nan, model_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            metrics,
        )
        db.executemany(
            "INSERT INTO tracking_latest_metrics (tenant_id, project_id, run_id, key, step, "
            "timestamp, value, is_nan) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            latest,
        )
    db.close()


TIMEOUT = 120


def median_of(action, reps):
    """Returns the median time of `reps` calls after a warm-up call, and the last result;
    (None, None) when a call fails, such as by running past TIMEOUT seconds."""
    times = []
    result = None
    try:
        action()  # warm-up
        for _ in range(reps):
            started = time.perf_counter()
            result = action()
            times.append(time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 - a failed case is reported, not fatal
        print(f"    failed: {error}"[:300], flush=True)
        return None, None
    return statistics.median(times), result


class RawSearch:
    """POSTs runs/search on a kept-alive connection and returns the size of the body. A
    connection the server closed while idle (uvicorn does after 5 s) is opened again before
    the timed request, so reconnecting is never part of a measurement."""

    def __init__(self, server):
        self.address = urllib.parse.urlparse(server.url)
        self.connection = None
        self.headers = {"content-type": "application/json"}
        if server.token:
            self.headers["authorization"] = f"Bearer {server.token}"

    def reconnect(self):
        if self.connection is not None:
            self.connection.close()
        self.connection = http.client.HTTPConnection(
            self.address.hostname, self.address.port, timeout=TIMEOUT
        )
        self.connection.connect()

    def __call__(self, experiment_id, filter_string, order_by, max_results):
        body = json.dumps({
            "experiment_ids": [experiment_id],
            "filter": filter_string,
            "order_by": order_by,
            "max_results": max_results,
            "run_view_type": "ACTIVE_ONLY",
        })
        if self.connection is None:
            self.reconnect()
        try:
            try:
                self.connection.request(
                    "POST", "/api/2.0/mlflow/runs/search", body, self.headers
                )
                response = self.connection.getresponse()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # Raised when the request is sent on a connection the server closed; the
                # server has not started on it, so the retry measures one full search.
                self.reconnect()
                self.connection.request(
                    "POST", "/api/2.0/mlflow/runs/search", body, self.headers
                )
                response = self.connection.getresponse()
            data = response.read()
        except Exception:
            # A timed-out or failed request leaves the connection unusable; open a new one
            # for the next request.
            self.connection.close()
            self.connection = None
            raise
        if response.status != 200:
            raise RuntimeError(f"search failed with {response.status}: {data[:300]!r}")
        return len(data)


def time_server(server, experiments, reps, large_reps):
    client = client_for(server)
    raw = RawSearch(server)
    results = {}
    for count, experiment_id in experiments.items():
        reps_here = large_reps if count >= 10_000 else reps
        for label, filter_string, order_by, max_results in CASES:
            seconds, runs = median_of(
                lambda: client.search_runs(
                    [experiment_id], filter_string, max_results=max_results, order_by=order_by
                ),
                reps_here,
            )
            full, size = median_of(
                lambda: raw(experiment_id, filter_string, order_by, max_results), reps_here
            )
            small, _ = median_of(
                lambda: raw(experiment_id, filter_string, order_by, 10), reps_here
            )
            results[(count, label)] = {
                "client": seconds,
                "raw_full": full,
                "raw_10": small,
                "bytes": size,
                "ids": None if runs is None else [run.info.run_id for run in runs],
            }
            print(
                f"  {count:>7} runs | {label}: {'-' if runs is None else len(runs)} runs, "
                f"client {ms(seconds)} ms, raw {ms(full)} ms ({size} bytes), "
                f"raw top 10 {ms(small)} ms",
                flush=True,
            )
    return results


def ms(seconds):
    return f"> {TIMEOUT * 1000}" if seconds is None else f"{seconds * 1000:.1f}"


def ratio(theirs, ours):
    if ours is None:
        return "-"
    if theirs is None:
        return f"> {TIMEOUT / ours:.0f}x"
    return f"{theirs / ours:.0f}x"


def create_experiments(server, counts):
    client = client_for(server)
    return {count: client.create_experiment(f"scale-{count}") for count in counts}


def seed(ghaf_binary, counts, ghaf_dir, mlflow_dir):
    """Creates one experiment per run count on fresh stores, then seeds the runs."""
    with GhafServer(ghaf_binary, ghaf_dir) as ghaf:
        ghaf_experiments = create_experiments(ghaf, counts)
    with MlflowServer(mlflow_dir) as mlflow:
        mlflow_experiments = create_experiments(mlflow, counts)
    for count in counts:
        started = time.perf_counter()
        seed_mlflow(os.path.join(mlflow_dir, "mlflow.db"), mlflow_experiments[count], count)
        mlflow_seconds = time.perf_counter() - started
        started = time.perf_counter()
        seed_ghaf(os.path.join(ghaf_dir, "meta.db"), ghaf_experiments[count], count)
        ghaf_seconds = time.perf_counter() - started
        print(
            f"seeded {count} runs: mlflow {mlflow_seconds:.1f} s, ghaf {ghaf_seconds:.1f} s",
            flush=True,
        )
    return ghaf_experiments, mlflow_experiments


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ghaf", help="path to the ghaf binary, such as target/release/ghaf")
    parser.add_argument("--runs", default="1000,100000", help="run counts, comma-separated")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--large-reps", type=int, default=3, help="repetitions for 10,000 runs or more"
    )
    parser.add_argument("--workdir", help="directory for both stores (default: a temp dir)")
    parser.add_argument(
        "--reuse", action="store_true", help="time the stores seeded before in --workdir"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.runs.split(",")]
    workdir = args.workdir or tempfile.mkdtemp(prefix="ghaf-search-bench-")
    ghaf_dir = os.path.join(workdir, "ghaf")
    mlflow_dir = os.path.join(workdir, "mlflow")
    print(f"stores in {workdir}; load average {load_average()}", flush=True)

    seeded_file = os.path.join(workdir, "experiments.json")
    if args.reuse:
        with open(seeded_file) as f:
            seeded = json.load(f)
        ghaf_experiments = {int(k): v for k, v in seeded["ghaf"].items() if int(k) in counts}
        mlflow_experiments = {int(k): v for k, v in seeded["mlflow"].items() if int(k) in counts}
    else:
        ghaf_experiments, mlflow_experiments = seed(args.ghaf, counts, ghaf_dir, mlflow_dir)
        with open(seeded_file, "w") as f:
            json.dump({"ghaf": ghaf_experiments, "mlflow": mlflow_experiments}, f)

    print(f"ghaf (load average {load_average()})", flush=True)
    with GhafServer(args.ghaf, ghaf_dir) as ghaf:
        ghaf_results = time_server(ghaf, ghaf_experiments, args.reps, args.large_reps)
    print(f"mlflow server (load average {load_average()})", flush=True)
    with MlflowServer(mlflow_dir) as mlflow:
        mlflow_results = time_server(mlflow, mlflow_experiments, args.reps, args.large_reps)
    print(f"done (load average {load_average()})", flush=True)

    print()
    print("| Runs | Search | Returned | `mlflow server` client / raw / raw top 10 | "
          "Ghaf client / raw / raw top 10 | Raw speed-up (page / top 10) |")
    print("|---|---|---|---|---|---|")
    for (count, label), ours in ghaf_results.items():
        theirs = mlflow_results[(count, label)]
        if ours["ids"] is None or theirs["ids"] is None:
            returned = "-" if ours["ids"] is None else f"{len(ours['ids']):,}"
        else:
            same = [i[8:] for i in ours["ids"]] == [i[8:] for i in theirs["ids"]]
            returned = f"{len(ours['ids']):,}{'' if same else ' (ids differ!)'}"
        print(
            f"| {count:,} | {label} | {returned} | "
            f"{ms(theirs['client'])} / {ms(theirs['raw_full'])} / {ms(theirs['raw_10'])} ms | "
            f"{ms(ours['client'])} / {ms(ours['raw_full'])} / {ms(ours['raw_10'])} ms | "
            f"{ratio(theirs['raw_full'], ours['raw_full'])} / "
            f"{ratio(theirs['raw_10'], ours['raw_10'])} |"
        )


if __name__ == "__main__":
    main()
