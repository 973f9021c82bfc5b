#!/usr/bin/env bash
# Installs what the Kafka consumer tests need, outside the clone:
# - the Debian packages cmake and libcurl4-openssl-dev, which the rdkafka `cmake-build` feature
#   needs to build librdkafka 2.12.1 (its sources include curl/curl.h even with curl disabled);
# - the tansu Kafka-protocol broker from crates.io into ~/.cache/ghaf-tools/tansu-<version>/.
#   The `dynostore` feature is required, because without it the `memory://` storage engine
#   fails with FeatureNotEnabled.
# Idempotent: skips each step whose result is already present. Prints the broker binary path.
# A cold tansu build is estimated at 7 minutes on 2 idle cores, and took 26.5 minutes on 2
# cores shared with other builds. It uses its own CARGO_TARGET_DIR, so it does not hold the
# workspace's build lock.
set -euo pipefail

version=0.6.0
root="$HOME/.cache/ghaf-tools/tansu-$version"
binary="$root/bin/tansu"

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || missing+=(libcurl4-openssl-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo=sudo
    fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi

if [ ! -x "$binary" ]; then
    CARGO_TARGET_DIR="$HOME/.cache/ghaf-tools/tansu-build" \
        cargo install tansu --version "=$version" --locked --features dynostore --root "$root"
fi

echo "$binary"
