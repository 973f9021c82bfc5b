#!/usr/bin/env bash
# Creates the Python environment with NVIDIA's Triton client library that the Open Inference
# Protocol tests (crates/ghaf-server/tests/oip_tritonclient.rs) drive a Ghaf server with.
#
# The venv lives outside the clone so that it survives checkouts and is shared by CI runs on
# the same machine. Rerunning the script is cheap: pip only installs what is missing.
#
#   GHAF_TRITONCLIENT_VENV  venv directory (default: $HOME/.cache/ghaf-tritonclient-venv)
#   GHAF_PIP_CACHE          pip cache directory (default: $HOME/.cache/ghaf-pip)
set -euo pipefail

venv="${GHAF_TRITONCLIENT_VENV:-$HOME/.cache/ghaf-tritonclient-venv}"
pip_cache="${GHAF_PIP_CACHE:-$HOME/.cache/ghaf-pip}"
python="${PYTHON:-python3}"

requirements=(
    "tritonclient[http,grpc]==2.73.0"
    "numpy==2.4.6"
)

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "${requirements[@]}"
"$venv/bin/python" -c 'import tritonclient.http, tritonclient.grpc, numpy; from importlib.metadata import version; print("tritonclient", version("tritonclient"), "numpy", numpy.__version__)'
