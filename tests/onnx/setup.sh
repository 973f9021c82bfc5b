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
)

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "${requirements[@]}"
"$venv/bin/python" -c 'import onnxruntime, numpy; print("onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)'
