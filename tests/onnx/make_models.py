"""Trains scikit-learn models with fixed seeds, converts them to ONNX and records Python
ONNX Runtime outputs, for the runtime tests to compare against.

Usage: make_models.py OUTPUT_DIR

For every model NAME it writes:
  NAME.onnx                 the model, converted with skl2onnx (zipmap=False)
  NAME.input.<INPUT>.bin    each input tensor: little-endian float64, float32 or int64, or for
                            string inputs one UTF-8 value per line
  NAME.output.<OUTPUT>.bin  each output of Python ONNX Runtime, little-endian, in its own type
and manifest.json lists the models with the names, datatypes and shapes of their inputs and
outputs. The datasets are the ones bundled with scikit-learn, so nothing is downloaded.
"""

import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import sklearn
import skl2onnx
from onnx import helper as onnx_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

SEED = 7
TEST_ROWS = 40

DATATYPES = {
    np.dtype("float64"): "FP64",
    np.dtype("float32"): "FP32",
    np.dtype("int64"): "INT64",
    np.dtype("int32"): "INT32",
    np.dtype("bool"): "BOOL",
}


def coerce_boolean_attributes(model_proto):
    """Rewrites Python booleans in integer-list attributes as ints.

    skl2onnx 1.20 with onnx 1.23 fails to build HistGradientBoosting trees because
    `nodes_missing_value_tracks_true` contains Python booleans. The attribute needs ints.
    """
    for node in model_proto.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.INTS:
                attribute.ints[:] = [int(value) for value in attribute.ints]
    return model_proto


def convert_hist_gradient_boosting(model, initial_types):
    """Converts a HistGradientBoosting model, working around the boolean attribute crash."""
    original = onnx_helper.make_attribute

    def make_attribute(key, value, *args, **kwargs):
        if isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value):
            value = [int(v) for v in value]
        return original(key, value, *args, **kwargs)

    onnx_helper.make_attribute = make_attribute
    try:
        return coerce_boolean_attributes(convert(model, initial_types))
    finally:
        onnx_helper.make_attribute = original


def convert(model, initial_types):
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    return convert_sklearn(model, initial_types=initial_types, options=options, target_opset={"": 21, "ai.onnx.ml": 3})


def write_tensor(path, array):
    if array.dtype.kind in ("U", "O"):
        path.write_text("".join(f"{value}\n" for value in array.reshape(-1)), encoding="utf-8")
    else:
        array.astype(array.dtype.newbyteorder("<")).tofile(path)


def datatype(array):
    if array.dtype.kind in ("U", "O"):
        return "BYTES"
    return DATATYPES[array.dtype]


def record(out_dir, manifest, name, model_proto, inputs):
    """Saves the model and inputs, runs Python ONNX Runtime and saves its outputs."""
    model_path = out_dir / f"{name}.onnx"
    model_path.write_bytes(model_proto.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feed = {key: value for key, value in inputs.items()}
    names = [output.name for output in session.get_outputs()]
    results = session.run(names, feed)
    entry = {"name": name, "inputs": [], "outputs": []}
    for key, value in inputs.items():
        write_tensor(out_dir / f"{name}.input.{key}.bin", value)
        entry["inputs"].append({"name": key, "datatype": datatype(value), "shape": list(value.shape)})
    for key, value in zip(names, results):
        value = np.asarray(value)
        write_tensor(out_dir / f"{name}.output.{key}.bin", value)
        entry["outputs"].append({"name": key, "datatype": datatype(value), "shape": list(value.shape)})
    manifest.append(entry)


def main():
    out_dir = pathlib.Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []

    cancer_x, cancer_y = load_breast_cancer(return_X_y=True)
    iris_x, iris_y = load_iris(return_X_y=True)
    diabetes_x, diabetes_y = load_diabetes(return_X_y=True)
    cancer_x32 = cancer_x.astype(np.float32)
    iris_x32 = iris_x.astype(np.float32)
    diabetes_x32 = diabetes_x.astype(np.float32)

    def float_input(x):
        return [("input", FloatTensorType([None, x.shape[1]]))]

    def test_rows(x):
        return x[:TEST_ROWS].copy()

    classifiers = [
        ("logreg_binary", LogisticRegression(max_iter=5000, random_state=SEED), cancer_x32, cancer_y),
        ("logreg_multiclass", LogisticRegression(max_iter=5000, random_state=SEED), iris_x32, iris_y),
        (
            "scaler_logreg",
            Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=5000, random_state=SEED))]),
            cancer_x32,
            cancer_y,
        ),
        ("random_forest_binary", RandomForestClassifier(n_estimators=30, max_depth=6, random_state=SEED), cancer_x32, cancer_y),
        ("random_forest_multiclass", RandomForestClassifier(n_estimators=30, max_depth=6, random_state=SEED), iris_x32, iris_y),
        ("gradient_boosting_binary", GradientBoostingClassifier(n_estimators=40, random_state=SEED), cancer_x32, cancer_y),
        ("gradient_boosting_multiclass", GradientBoostingClassifier(n_estimators=40, random_state=SEED), iris_x32, iris_y),
    ]
    for name, model, x, y in classifiers:
        model.fit(x, y)
        record(out_dir, manifest, name, convert(model, float_input(x)), {"input": test_rows(x)})

    hist = HistGradientBoostingClassifier(max_iter=40, random_state=SEED)
    # Missing values in training and test rows exercise the trees' missing-value branches.
    hist_x = cancer_x32.copy()
    hist_x[::17, 3] = np.nan
    hist.fit(hist_x, cancer_y)
    record(
        out_dir,
        manifest,
        "hist_gradient_boosting_binary",
        convert_hist_gradient_boosting(hist, float_input(hist_x)),
        {"input": test_rows(hist_x)},
    )

    linear = LinearRegression().fit(diabetes_x, diabetes_y)
    record(
        out_dir,
        manifest,
        "linear_regression",
        convert(linear, [("input", DoubleTensorType([None, diabetes_x.shape[1]]))]),
        {"input": test_rows(diabetes_x)},
    )
    regressors = [
        ("random_forest_regressor", RandomForestRegressor(n_estimators=30, max_depth=6, random_state=SEED)),
        ("gradient_boosting_regressor", GradientBoostingRegressor(n_estimators=40, random_state=SEED)),
    ]
    for name, model in regressors:
        model.fit(diabetes_x32, diabetes_y)
        record(out_dir, manifest, name, convert(model, float_input(diabetes_x32)), {"input": test_rows(diabetes_x32)})

    # Every column is a separate input tensor: a string tensor per categorical column and a
    # float tensor per numeric column.
    rng = np.random.default_rng(SEED)
    rows = 300
    colors = np.array(["red", "green", "blue"])[rng.integers(0, 3, rows)]
    sizes = np.array(["S", "M", "L", "XL"])[rng.integers(0, 4, rows)]
    numeric = rng.normal(size=(rows, 3)).astype(np.float32)
    label = ((colors == "red") ^ (numeric[:, 0] > 0.2) | (sizes == "XL")).astype(np.int64)
    frame = pd.DataFrame({"color": colors, "size": sizes, "x0": numeric[:, 0], "x1": numeric[:, 1], "x2": numeric[:, 2]})
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("categories", OneHotEncoder(handle_unknown="ignore"), ["color", "size"]),
                        ("numbers", StandardScaler(), ["x0", "x1", "x2"]),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=5000, random_state=SEED)),
        ]
    )
    pipeline.fit(frame, label)
    initial_types = [
        ("color", StringTensorType([None, 1])),
        ("size", StringTensorType([None, 1])),
        ("x0", FloatTensorType([None, 1])),
        ("x1", FloatTensorType([None, 1])),
        ("x2", FloatTensorType([None, 1])),
    ]
    proto = convert_sklearn(
        pipeline,
        initial_types=initial_types,
        options={id(pipeline): {"zipmap": False}},
        target_opset={"": 21, "ai.onnx.ml": 3},
    )
    test = slice(0, TEST_ROWS)
    record(
        out_dir,
        manifest,
        "column_transformer_logreg",
        proto,
        {
            "color": colors[test].reshape(-1, 1).astype(object),
            "size": sizes[test].reshape(-1, 1).astype(object),
            "x0": numeric[test, 0:1],
            "x1": numeric[test, 1:2],
            "x2": numeric[test, 2:3],
        },
    )

    # A classifier converted with the default ZipMap output (a sequence of maps), which the
    # runtime rejects at load.
    zipmap_model = LogisticRegression(max_iter=5000, random_state=SEED).fit(iris_x32, iris_y)
    zipmap_proto = convert_sklearn(zipmap_model, initial_types=float_input(iris_x32), target_opset={"": 21, "ai.onnx.ml": 3})
    (out_dir / "logreg_zipmap.onnx").write_bytes(zipmap_proto.SerializeToString())

    versions = {
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }
    (out_dir / "manifest.json").write_text(json.dumps({"versions": versions, "models": manifest}, indent=1))


if __name__ == "__main__":
    main()
