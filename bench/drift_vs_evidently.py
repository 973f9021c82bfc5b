"""Benchmark a drift report on numeric data: Evidently's data drift preset against Ghaf's
compatibility mode and default mode, in one run on the same data.

Each contender runs as a child process under GNU time (/usr/bin/time), which reports its CPU
time (user + system) and peak resident memory. Each child loads the same raw file, so the numbers
include reading the data; Evidently's also include importing its Python modules.

`cargo bench -p ghaf-monitor --bench drift` builds the Rust side in release mode and runs this
script with the Evidently venv's Python (tests/evidently/setup.sh). By hand, build the example
and pass it as --binary:

    cargo build --release -p ghaf-monitor --example drift_report
    ~/.cache/ghaf-venv-evidently/bin/python bench/drift_vs_evidently.py \
        --binary "$CARGO_TARGET_DIR/release/examples/drift_report"
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

EVIDENTLY_CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

path, rows, columns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
values = np.fromfile(path, dtype="<f8").reshape(2 * columns, rows)
names = [f"f{i}" for i in range(columns)]
reference = pd.DataFrame({name: values[i] for i, name in enumerate(names)})
current = pd.DataFrame({name: values[columns + i] for i, name in enumerate(names)})
del values
definition = DataDefinition(numerical_columns=names)
start = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(
    Dataset.from_pandas(current, data_definition=definition),
    Dataset.from_pandas(reference, data_definition=definition),
).dict()
seconds = time.perf_counter() - start
scores = {}
share = None
for metric in snapshot["metrics"]:
    config = metric["config"]
    if config["type"].endswith("ValueDrift"):
        scores[config["column"]] = {"method": config["method"], "score": float(metric["value"])}
    elif config["type"].endswith("DriftedColumnsCount"):
        share = metric["value"]["share"]
print(json.dumps({"report_seconds": seconds, "share": share, "columns": scores}))
"""


def run_child(command, directory):
    """Run a command under GNU time and return its JSON stdout, CPU seconds, peak RSS in MiB
    and wall seconds.

    GNU time reports the child's own rusage. Measuring with wait4 from this process would
    count pages the forked child inherited from this Python process before exec.
    """
    usage_path = os.path.join(directory, "usage.txt")
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-o", usage_path, "-f", "%U %S %M", *command], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{command[0]} failed with exit code {result.returncode}:\n{result.stderr}")
    with open(usage_path, encoding="utf-8") as handle:
        user, system, max_rss_kib = handle.read().split()[-3:]
    return json.loads(result.stdout), float(user) + float(system), int(max_rss_kib) / 1024, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="path of the release drift_report example")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in each of reference and current")
    parser.add_argument("--columns", type=int, default=20, help="numeric columns")
    parser.add_argument("--seed", type=int, default=2026)
    arguments = parser.parse_args()

    rng = np.random.default_rng(arguments.seed)
    rows, columns = arguments.rows, arguments.columns
    reference = rng.normal(0.0, 1.0, (columns, rows))
    # Every fourth current column is shifted by 0.2 standard deviations.
    shifts = np.array([0.2 if i % 4 == 0 else 0.0 for i in range(columns)])[:, None]
    current = rng.normal(0.0, 1.0, (columns, rows)) + shifts

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "data.f64")
        np.concatenate([reference, current]).astype("<f8").tofile(path)
        del reference, current
        size = [str(rows), str(columns)]
        evidently, evidently_cpu, evidently_rss, evidently_wall = run_child(
            [sys.executable, "-c", EVIDENTLY_CHILD, path, *size], directory
        )
        compatible, compatible_cpu, compatible_rss, compatible_wall = run_child(
            [arguments.binary, path, *size, "evidently"], directory
        )
        default, default_cpu, default_rss, default_wall = run_child(
            [arguments.binary, path, *size, "ghaf"], directory
        )

    worst = 0.0
    for column in compatible["columns"]:
        theirs = evidently["columns"][column["column"]]["score"]
        ours = column["score"]
        worst = max(worst, 0.0 if ours == theirs else abs(ours - theirs) / max(abs(ours), abs(theirs)))

    print(f"data: {rows:,} reference rows and {rows:,} current rows x {columns} numeric columns")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print()
    print("| contender | CPU s | peak RSS MiB | wall s | report s | drift share |")
    print("|---|---|---|---|---|---|")
    rows_out = [
        ("Evidently 0.7.23 DataDriftPreset", evidently_cpu, evidently_rss, evidently_wall, evidently),
        ("Ghaf compatibility mode", compatible_cpu, compatible_rss, compatible_wall, compatible),
        ("Ghaf default mode", default_cpu, default_rss, default_wall, default),
    ]
    for name, cpu, rss, wall, result in rows_out:
        print(f"| {name} | {cpu:.2f} | {rss:.0f} | {wall:.2f} | {result['report_seconds']:.2f} | {result['share']} |")
    print()
    print(f"CPU time ratio Evidently / Ghaf compatibility: {evidently_cpu / max(compatible_cpu, 0.01):.1f}x")
    print(f"peak memory ratio Ghaf compatibility / Evidently: {compatible_rss / evidently_rss:.3f}")
    print(f"largest relative score difference, compatibility mode vs Evidently: {worst:.3e}")


if __name__ == "__main__":
    main()
