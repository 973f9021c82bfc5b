"""Runs an ONNX model on a float64 input matrix with ONNX Runtime and writes its single output.

Usage: run_model.py MODEL INPUT ROWS COLUMNS OUTPUT

INPUT holds ROWS x COLUMNS little-endian float64 values, row-major. OUTPUT receives the
model's only output, converted to little-endian float64, row-major.
"""

import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    model_path, input_path, rows, columns, output_path = sys.argv[1:6]
    matrix = np.fromfile(input_path, dtype="<f8").reshape(int(rows), int(columns))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    (output,) = session.run(None, {input_name: matrix})
    np.asarray(output, dtype="<f8").tofile(output_path)


if __name__ == "__main__":
    main()
