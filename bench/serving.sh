#!/usr/bin/env bash
# Serving benchmark: Ghaf (REST and gRPC of the Open Inference Protocol) against MLServer on
# one scikit-learn model, with ONNX Runtime in-process as the floor. See bench/serving.py.
#
#   bench/serving.sh [GHAF_BINARY] [-- serving.py options such as --clients 8 --seconds 10]
#
# GHAF_BINARY defaults to the release build in $HOME/.cache/ghaf-target-release; build it with
#   CARGO_TARGET_DIR=$HOME/.cache/ghaf-target-release cargo build --release -p ghaf-cli
# The MLServer venv (GHAF_MLSERVER_VENV, default $HOME/.cache/ghaf-mlserver-venv) is created
# with pinned versions when missing. ONNX Runtime for Ghaf comes from its onnxruntime wheel.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
ghaf="${1:-$HOME/.cache/ghaf-target-release/release/ghaf}"
shift || true
[ "${1:-}" = "--" ] && shift
venv="${GHAF_MLSERVER_VENV:-$HOME/.cache/ghaf-mlserver-venv}"
pip_cache="${GHAF_PIP_CACHE:-$HOME/.cache/ghaf-pip}"

[ -x "$ghaf" ] || { echo "no ghaf binary at $ghaf; build it first (see the header)" >&2; exit 1; }

requirements=(
    "mlserver==1.7.1"
    "mlserver-sklearn==1.7.1"
    "mlflow-skinny==3.17.2"
    "skl2onnx==1.20.0"
    "onnx==1.23.2"
    # The ONNX Runtime version Ghaf is tested with; its libonnxruntime is given to Ghaf too.
    "onnxruntime==1.32.0"
)
if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "${requirements[@]}"

ort_library="$(echo "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*)"
[ -f "$ort_library" ] || { echo "no libonnxruntime in $venv" >&2; exit 1; }

# The Rust load generator (one CPU, keep-alive HTTP/1.1) measures REST of both servers after
# the Python clients; GHAF_SKIP_RUST_CLIENT=1 leaves it out.
rust_client=()
if [ "${GHAF_SKIP_RUST_CLIENT:-0}" != 1 ]; then
    release_dir="${GHAF_RELEASE_TARGET_DIR:-$HOME/.cache/ghaf-target-release}"
    (cd "$root" && CARGO_TARGET_DIR="$release_dir" cargo build --release --quiet -p ghaf-server --example oip_load)
    rust_client=(--rust-client "$release_dir/release/examples/oip_load")
fi

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$venv/bin/python" "$root/bench/serving.py" "$ghaf" --ort-library "$ort_library" "${rust_client[@]}" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
