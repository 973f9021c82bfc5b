#!/usr/bin/env bash
# Routing cost: one model behind endpoints with each traffic policy (single, A/B sticky,
# canary at 50 %, shadow at 100 %), measured with the Rust load generator. See
# bench/routing.py.
#
#   bench/routing.sh [GHAF_BINARY] [-- routing.py options such as --rounds 5]
#
# GHAF_BINARY defaults to the release build in $HOME/.cache/ghaf-target-release; build it with
#   CARGO_TARGET_DIR=$HOME/.cache/ghaf-target-release cargo build --release -p ghaf-cli
# The venv is the serving benchmark's (GHAF_MLSERVER_VENV, default
# $HOME/.cache/ghaf-mlserver-venv); run bench/serving.sh once to create it.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
ghaf="${1:-$HOME/.cache/ghaf-target-release/release/ghaf}"
shift || true
[ "${1:-}" = "--" ] && shift
venv="${GHAF_MLSERVER_VENV:-$HOME/.cache/ghaf-mlserver-venv}"

[ -x "$ghaf" ] || { echo "no ghaf binary at $ghaf; build it first (see the header)" >&2; exit 1; }
[ -x "$venv/bin/python" ] || { echo "no venv at $venv; run bench/serving.sh once" >&2; exit 1; }
ort_library="$(echo "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*)"
[ -f "$ort_library" ] || { echo "no libonnxruntime in $venv" >&2; exit 1; }

release_dir="${GHAF_RELEASE_TARGET_DIR:-$HOME/.cache/ghaf-target-release}"
(cd "$root" && CARGO_TARGET_DIR="$release_dir" cargo build --release --quiet -p ghaf-server --example oip_load)

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cd "$root/bench"
"$venv/bin/python" routing.py "$ghaf" --ort-library "$ort_library" \
    --rust-client "$release_dir/release/examples/oip_load" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
