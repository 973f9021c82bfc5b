#!/usr/bin/env bash
# Creates the Python environment with ONNX Runtime that the ONNX export tests run models in.
#
# The venv lives outside the clone so that it survives checkouts and is shared by CI runs on
# the same machine. Rerunning the script is cheap: pip only installs what is missing.
#
#   GHAF_ONNX_VENV   venv directory (default: $HOME/.cache/ghaf-onnx-venv)
#   GHAF_PIP_CACHE   pip cache directory (default: $HOME/.cache/ghaf-pip)
set -euo pipefail

venv="${GHAF_ONNX_VENV:-$HOME/.cache/ghaf-onnx-venv}"
pip_cache="${GHAF_PIP_CACHE:-$HOME/.cache/ghaf-pip}"
python="${PYTHON:-python3}"

# Pinned versions: the export tests compare native predictions with exactly these.
requirements=(
    "onnxruntime==1.32.0"
    "numpy==2.4.6"
    # Used by make_models.py, which trains scikit-learn models and converts them to ONNX for
    # the runtime tests.
    "scikit-learn==1.9.1"
    "skl2onnx==1.20.0"
    "onnx==1.23.2"
    # The ColumnTransformer model of make_models.py selects columns by name from a DataFrame.
    "pandas==3.1.1"
)

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "${requirements[@]}"
"$venv/bin/python" -c 'import onnxruntime, numpy, sklearn, skl2onnx, onnx, pandas; print("onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, "scikit-learn", sklearn.__version__, "skl2onnx", skl2onnx.__version__, "onnx", onnx.__version__, "pandas", pandas.__version__)'
