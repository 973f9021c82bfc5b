"""A command job: trains a scikit-learn logistic regression on the job's input dataset
version and logs it through the MLflow client to the Ghaf server that runs the job.

The worker sets MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN, GHAF_INPUT_0 (the Parquet file of
the first input), GHAF_LABEL, GHAF_PARAMETERS (JSON) and GHAF_OUTPUT_DIR.
"""

import json
import os

import mlflow
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

parameters = json.loads(os.environ["GHAF_PARAMETERS"])
label = os.environ["GHAF_LABEL"]
frame = pd.read_parquet(os.environ["GHAF_INPUT_0"])
features = [c for c in frame.columns if c != label and pd.api.types.is_numeric_dtype(frame[c])]
frame = frame.dropna(subset=[label])
X = frame[features].fillna(0.0)
y = frame[label].astype(int)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)

mlflow.set_experiment("sklearn-job")
with mlflow.start_run() as run:
    model = LogisticRegression(C=float(parameters.get("C", 1.0)), max_iter=500)
    model.fit(X_train, y_train)
    scores = model.predict_proba(X_test)[:, 1]
    mlflow.log_param("C", parameters.get("C", 1.0))
    mlflow.log_param("n_features", len(features))
    mlflow.log_metric("accuracy", accuracy_score(y_test, model.predict(X_test)))
    mlflow.log_metric("auc", roc_auc_score(y_test, scores))
    mlflow.sklearn.log_model(model, name="model", input_example=X_train.head(2))
    with open(os.path.join(os.environ["GHAF_OUTPUT_DIR"], "run_id.txt"), "w") as out:
        out.write(run.info.run_id)
    print(f"trained on {len(X_train)} rows; run {run.info.run_id}", flush=True)
print("job script done", flush=True)
