"""Run Evidently's data drift preset on generated data and write inputs and results to JSON.

The scenarios cover every branch of Evidently's default method choice: references of at most
1,000 rows and larger ones, with numeric, discrete numeric, categorical and binary columns.
They also cover the exact and asymptotic KS p-values and, through a method override, the
Sturges binning of PSI and Jensen-Shannon. Seeds are fixed, so every run writes the same data.

Numbers are written as the 64-bit patterns of their IEEE 754 doubles, so that the Rust side
reads exactly the values Evidently saw, NaN and infinities included.

Usage: python drift_parity.py OUTPUT.json
"""

import json
import sys

import evidently
import numpy as np
import pandas as pd
import scipy
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def numeric(rng, n, loc=0.0, scale=1.0, missing=0.0):
    values = rng.normal(loc, scale, n)
    if missing:
        mask = rng.random(n) < missing
        values[mask] = np.nan
        values[rng.integers(0, n, 2)] = np.inf
    return values


def discrete(rng, n, levels, probabilities=None):
    return rng.choice(np.asarray(levels, dtype=float), n, p=probabilities)


def labels(rng, n, names, probabilities=None, missing=0.0):
    values = rng.choice(np.asarray(names, dtype=object), n, p=probabilities)
    if missing:
        values[rng.random(n) < missing] = None
    return values


def scenario_small_reference(seed):
    rng = np.random.default_rng(seed)
    n_ref, n_cur = 800, 600

    def make(n, shifted):
        return {
            "num_same": numeric(rng, n, missing=0.02),
            "num_shift": numeric(rng, n, loc=0.4 if shifted else 0.0),
            "num_four": discrete(rng, n, [1, 2, 3, 4]),
            "num_binary": discrete(rng, n, [0, 1], [0.3, 0.7] if shifted else [0.4, 0.6]),
            "cat_five": labels(rng, n, ["a", "b", "c", "d", "e"], missing=0.01),
            "cat_shift": labels(rng, n, ["x", "y", "z"], [0.2, 0.3, 0.5] if shifted else [0.4, 0.3, 0.3]),
            "cat_binary": labels(rng, n, ["no", "yes"]),
            "cat_single": labels(rng, n, ["only"]),
        }

    return make(n_ref, False), make(n_cur, True)


def scenario_small_equal(seed):
    rng = np.random.default_rng(seed)
    n = 500

    def make(shifted):
        return {
            "num_equal": numeric(rng, n, scale=1.3 if shifted else 1.0),
            "num_equal_same": numeric(rng, n),
        }

    return make(False), make(True)


def scenario_small_reference_large_current(seed):
    """Reference ≤ 1,000 rows and current > 10,000: asymptotic KS, and the chi-square false
    alarm on a categorical column whose generating distribution does not change."""
    rng = np.random.default_rng(seed)
    probabilities = [0.1, 0.2, 0.3, 0.4]

    def make(n):
        return {
            "num_asymptotic": numeric(rng, n),
            "cat_unchanged": labels(rng, n, ["p", "q", "r", "s"], probabilities),
        }

    return make(1000), make(100_000)


def scenario_large_reference(seed):
    rng = np.random.default_rng(seed)

    def make(n, shifted):
        return {
            "num_same": numeric(rng, n, missing=0.01),
            "num_shift": numeric(rng, n, loc=0.3 if shifted else 0.0),
            "num_four": discrete(rng, n, [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4] if shifted else None),
            "num_fifteen": discrete(rng, n, list(range(15))),
            "cat_six": labels(rng, n, ["a", "b", "c", "d", "e", "f"]),
            "cat_binary": labels(rng, n, ["no", "yes"], [0.7, 0.3] if shifted else [0.5, 0.5]),
        }

    return make(5000, False), make(4000, True)


def scenario_binned(seed):
    """Continuous columns under PSI and Jensen-Shannon overrides: Sturges bins over the
    combined data, including empty bins."""
    rng = np.random.default_rng(seed)

    def make(n, shifted):
        tail = rng.exponential(1.0, n)
        if shifted:
            tail[:5] = 40.0
        return {
            "num_normal": numeric(rng, n, loc=0.2 if shifted else 0.0),
            "num_tail": tail,
            "num_ten": discrete(rng, n, list(range(10))),
            "cat_three": labels(rng, n, ["u", "v", "w"]),
        }

    return make(3000, False), make(2500, True)


SCENARIOS = [
    ("small_reference", scenario_small_reference, 11, None),
    ("small_equal", scenario_small_equal, 12, None),
    ("small_reference_large_current", scenario_small_reference_large_current, 13, None),
    ("large_reference", scenario_large_reference, 14, None),
    ("binned_psi", scenario_binned, 15, "psi"),
    ("binned_jensenshannon", scenario_binned, 16, "jensenshannon"),
]


def encode(values):
    if values.dtype == object:
        return [None if v is None else str(v) for v in values]
    return [int(bits) for bits in np.asarray(values, dtype=np.float64).view(np.uint64)]


def run(name, builder, seed, method):
    reference, current = builder(seed)
    numeric_columns = [c for c, v in reference.items() if v.dtype != object]
    categorical_columns = [c for c, v in reference.items() if v.dtype == object]
    definition = DataDefinition(numerical_columns=numeric_columns, categorical_columns=categorical_columns)
    preset = DataDriftPreset(method=method) if method else DataDriftPreset()
    report = Report([preset], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(pd.DataFrame(current), data_definition=definition),
        Dataset.from_pandas(pd.DataFrame(reference), data_definition=definition),
    ).dict()

    columns = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            columns[config["column"]] = {
                "method": config["method"],
                "threshold": config["threshold"],
                "score": float(metric["value"]),
                "metric_id": metric["id"],
            }
        elif config["type"].endswith("DriftedColumnsCount"):
            drifted_count = metric["value"]["count"]
            share = metric["value"]["share"]
            count_id = metric["id"]
    dataset_drifted = None
    for test in snapshot["tests"]:
        metric_id = test["metric_config"]["metric_id"]
        failed = test["status"] == "FAIL"
        if metric_id == count_id:
            # DriftedColumnsCount's test passes while share < drift_share.
            dataset_drifted = failed
        for column in columns.values():
            if column["metric_id"] == metric_id:
                column["drifted"] = failed
    for column in columns.values():
        del column["metric_id"]

    return {
        "name": name,
        "method": method,
        "columns": [
            {
                "name": column,
                "kind": "categorical" if column in categorical_columns else "numeric",
                "reference": encode(reference[column]),
                "current": encode(current[column]),
            }
            for column in reference
        ],
        "evidently": {
            "columns": columns,
            "drifted_count": drifted_count,
            "share": share,
            "dataset_drifted": dataset_drifted,
        },
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: drift_parity.py OUTPUT.json")
    output = {
        "versions": {
            "evidently": evidently.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "scenarios": [run(*scenario) for scenario in SCENARIOS],
    }
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        json.dump(output, handle)


if __name__ == "__main__":
    main()
