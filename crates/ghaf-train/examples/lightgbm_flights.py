"""Trains LightGBM at default parameters on matrices written by the flights_benchmark example.

Usage: lightgbm_flights.py DIR ROUNDS_OF_TIMING

DIR contains train.f64, train_label.f64, valid.f64 and meta.json (the column count and the
indices of categorical columns). Writes valid_pred.f64 and prints one JSON line with the
training times in seconds.
"""

import json
import sys
import time

import lightgbm as lgb
import numpy as np


def main() -> None:
    directory, repeats = sys.argv[1], int(sys.argv[2])
    meta = json.load(open(f"{directory}/meta.json"))
    columns = meta["columns"]
    train = np.fromfile(f"{directory}/train.f64", dtype="<f8").reshape(-1, columns)
    label = np.fromfile(f"{directory}/train_label.f64", dtype="<f8")
    valid = np.fromfile(f"{directory}/valid.f64", dtype="<f8").reshape(-1, columns)

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dataset = lgb.Dataset(train, label=label, categorical_feature=meta["categorical"], free_raw_data=False)
        booster = lgb.train({"objective": "binary", "verbose": -1}, dataset)
        times.append(time.perf_counter() - start)
    booster.predict(valid).astype("<f8").tofile(f"{directory}/valid_pred.f64")
    print(json.dumps({"train_seconds": times, "lightgbm_version": lgb.__version__}))


if __name__ == "__main__":
    main()
