"""Drives the pinned MLflow client against a Ghaf server and checks every result.

Run by `crates/ghaf-server/tests/mlflow_client.rs`, which starts the server and sets
MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN. A failed check raises AssertionError, so the
script exits with a non-zero status.
"""

import math
import os
import tempfile

import mlflow
import numpy as np
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

EXPERIMENT = "ghaf-compat"
MODEL = "ghaf-compat-model"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def main():
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()

    experiment = mlflow.set_experiment(EXPERIMENT)
    check(experiment.name == EXPERIMENT, f"experiment name {experiment.name!r}")
    check(experiment.experiment_id not in ("", "0"), f"experiment id {experiment.experiment_id!r}")

    features = np.array([[0.0, 0.1], [0.2, 0.1], [0.1, 0.3], [0.9, 1.0], [1.0, 0.8], [0.8, 0.9]])
    labels = np.array([0, 0, 0, 1, 1, 1])

    with tempfile.TemporaryDirectory() as scratch:
        notes = os.path.join(scratch, "notes.txt")
        with open(notes, "w", encoding="utf-8") as handle:
            handle.write("trained on the toy set\n")

        with mlflow.start_run(run_name="first") as first:
            mlflow.log_param("alpha", 0.5)
            mlflow.log_params({"model": "logreg", "solver": "lbfgs"})
            mlflow.log_metric("loss", 0.9, step=0)
            mlflow.log_metric("loss", 0.4, step=1)
            mlflow.log_metrics({"acc": 0.75, "not_a_number": float("nan")}, step=1)
            mlflow.set_tag("team", "risk")
            mlflow.log_artifact(notes)
            first_model = LogisticRegression().fit(features, labels)
            first_info = mlflow.sklearn.log_model(
                first_model,
                name="model",
                registered_model_name=MODEL,
                input_example=features[:2],
            )
        check(
            int(first_info.registered_model_version) == 1,
            f"first registration gave version {first_info.registered_model_version}",
        )

        with mlflow.start_run(run_name="second") as second:
            mlflow.log_params({"model": "logreg", "solver": "lbfgs"})
            mlflow.log_metric("acc", 0.95)
            second_model = LogisticRegression(C=0.5).fit(features, labels)
            second_info = mlflow.sklearn.log_model(
                second_model, name="model", registered_model_name=MODEL
            )
        check(
            int(second_info.registered_model_version) == 2,
            f"second registration gave version {second_info.registered_model_version}",
        )

        # Runs: params, latest metrics (NaN kept), tags, status and artifacts.
        run = client.get_run(first.info.run_id)
        check(run.info.status == "FINISHED", f"run status {run.info.status}")
        check(run.info.end_time is not None, "run has no end time")
        check(
            run.data.params == {"alpha": "0.5", "model": "logreg", "solver": "lbfgs"},
            f"params {run.data.params}",
        )
        check(run.data.metrics["loss"] == 0.4, f"latest loss {run.data.metrics['loss']}")
        check(math.isnan(run.data.metrics["not_a_number"]), "NaN metric was not kept")
        check(run.data.tags.get("team") == "risk", f"tags {run.data.tags}")
        artifacts = [entry.path for entry in client.list_artifacts(first.info.run_id)]
        check("notes.txt" in artifacts, f"run artifacts {artifacts}")
        downloaded = client.download_artifacts(first.info.run_id, "notes.txt", scratch + "/dl")
        with open(downloaded, encoding="utf-8") as handle:
            check(handle.read() == "trained on the toy set\n", "artifact content differs")

        history = client.get_metric_history(first.info.run_id, "loss")
        check(
            [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.4)],
            f"loss history {[(m.step, m.value) for m in history]}",
        )

        # Registry: alias, then load through the alias and predict.
        client.set_registered_model_alias(MODEL, "champion", 2)
        champion = client.get_model_version_by_alias(MODEL, "champion")
        check(champion.version == "2", f"champion is version {champion.version}")
        registered = client.get_registered_model(MODEL)
        check(registered.aliases == {"champion": "2"}, f"aliases {registered.aliases}")

        loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        predictions = loaded.predict(features)
        check(
            list(predictions) == list(second_model.predict(features)),
            f"predictions {list(predictions)}",
        )

        # Search with a filter and an order.
        runs = mlflow.search_runs(
            experiment_names=[EXPERIMENT],
            filter_string="metrics.acc > 0.5 and params.model = 'logreg'",
            order_by=["metrics.acc DESC"],
        )
        check(len(runs) == 2, f"search returned {len(runs)} runs")
        check(
            list(runs["run_id"]) == [second.info.run_id, first.info.run_id],
            f"search order {list(runs['run_id'])}",
        )
        none = mlflow.search_runs(
            experiment_names=[EXPERIMENT], filter_string="params.model = 'svm'"
        )
        check(len(none) == 0, f"filter for svm returned {len(none)} runs")

        versions = client.search_model_versions(f"name = '{MODEL}'")
        check(sorted(v.version for v in versions) == ["1", "2"], "model versions")

    print("mlflow client flow: all checks passed")


if __name__ == "__main__":
    main()
