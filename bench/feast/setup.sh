#!/usr/bin/env bash
# Creates the Python environment that runs Feast for the feature store benchmark
# (bench/feast/run.py). Optional: nothing in the tests needs it.
#
#   GHAF_FEAST_VENV  venv directory (default: $HOME/.cache/ghaf-feast-venv)
#   GHAF_PIP_CACHE   pip cache directory (default: $HOME/.cache/ghaf-pip)
#   PYTHON           interpreter for the venv (default: python3; Feast 0.67.0 was run on 3.11)
set -euo pipefail

venv="${GHAF_FEAST_VENV:-$HOME/.cache/ghaf-feast-venv}"
pip_cache="${GHAF_PIP_CACHE:-$HOME/.cache/ghaf-pip}"
python="${PYTHON:-python3}"

# Pinned: the numbers in BENCHMARKS.md were measured with exactly this Feast.
requirements=(
    "feast[duckdb]==0.67.0"
)

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "${requirements[@]}"
"$venv/bin/python" -c 'import feast, duckdb, pandas, pyarrow; print("feast", feast.__version__, "duckdb", duckdb.__version__, "pandas", pandas.__version__, "pyarrow", pyarrow.__version__)'
