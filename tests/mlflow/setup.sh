#!/usr/bin/env bash
# Creates the Python environment for the MLflow client compatibility test, once.
#
# The venv lives outside the clone so that it survives checkouts and is shared by CI runs on
# the same machine. Rerunning the script is cheap: it only installs what is missing.
#
#   GHAF_MLFLOW_VENV   venv directory (default: $HOME/.cache/ghaf-venv)
#   GHAF_PIP_CACHE     pip cache directory (default: $HOME/.cache/ghaf-pip)
set -euo pipefail

venv="${GHAF_MLFLOW_VENV:-$HOME/.cache/ghaf-venv}"
pip_cache="${GHAF_PIP_CACHE:-$HOME/.cache/ghaf-pip}"
python="${PYTHON:-python3}"

# Pinned client versions: the compatibility test checks against exactly these.
requirements=(
    "mlflow==3.17.2"
    "scikit-learn==1.9.1"
)

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "${requirements[@]}"
"$venv/bin/python" -c 'import mlflow, sklearn; print("mlflow", mlflow.__version__, "scikit-learn", sklearn.__version__)'
